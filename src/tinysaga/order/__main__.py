from tinysaga.platform.service import serve

serve("tinysaga.order.bootstrap:app", "order")
