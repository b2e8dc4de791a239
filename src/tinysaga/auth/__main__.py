from tinysaga.platform.service import serve

serve("tinysaga.auth.bootstrap:create_app", "auth")
