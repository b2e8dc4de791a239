from tinysaga.platform.service import serve

serve("tinysaga.inventory.bootstrap:app", "inventory")
