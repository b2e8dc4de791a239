from tinysaga.platform.service import serve

serve("tinysaga.web.app:create_app", "web")
