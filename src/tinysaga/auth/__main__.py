from tinysaga.platform.service import serve

serve("tinysaga.auth.bootstrap:app", "auth")
