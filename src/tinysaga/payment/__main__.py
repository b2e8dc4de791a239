from tinysaga.platform.service import serve

serve("tinysaga.payment.bootstrap:app", "payment")
