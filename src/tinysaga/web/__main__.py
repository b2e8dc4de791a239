from tinysaga.platform.service import serve

serve("tinysaga.web.app:app", "web")
