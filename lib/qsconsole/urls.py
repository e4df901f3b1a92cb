"""The console's URLs: the JSON API under /api/."""

from django.urls import path

from qsconsole.console import api

urlpatterns = [
    path("api/login", api.login_view),
    path("api/logout", api.logout_view),
    path("api/me", api.me_view),
    path("api/messages", api.message_list),
    path("api/messages/<int:pk>", api.message_detail),
    path("api/messages/<int:pk>/release", api.message_release),
]
