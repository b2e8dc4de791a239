from tinysaga.platform.service import serve

serve("tinysaga.wallet.bootstrap:create_app", "wallet")
