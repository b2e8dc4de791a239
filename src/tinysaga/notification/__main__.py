from tinysaga.platform.service import serve

serve("tinysaga.notification.bootstrap:app", "notification")
