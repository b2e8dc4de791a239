from tinysaga.platform.service import serve

serve("tinysaga.inventory.bootstrap:create_app", "inventory")
