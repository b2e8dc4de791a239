from tinysaga.platform.service import serve

serve("tinysaga.notification.bootstrap:create_app", "notification")
