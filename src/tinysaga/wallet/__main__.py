from tinysaga.platform.service import serve

serve("tinysaga.wallet.bootstrap:app", "wallet")
