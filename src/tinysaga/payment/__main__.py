from tinysaga.platform.service import serve

serve("tinysaga.payment.bootstrap:create_app", "payment")
