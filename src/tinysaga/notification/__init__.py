"""Notification service: tells users what happened to their orders, by email, SMS and in the inbox."""
