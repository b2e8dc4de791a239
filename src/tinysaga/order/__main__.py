from tinysaga.platform.service import serve

serve("tinysaga.order.bootstrap:create_app", "order")
