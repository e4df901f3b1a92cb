"""The console's URLs: the pages, and the JSON API under /api/."""

from django.urls import path

from qsconsole.console import api, release_links, views

urlpatterns = [
    path("api/login", api.login_view),
    path("api/logout", api.logout_view),
    path("api/me", api.me_view),
    path("api/messages", api.message_list),
    path("api/messages/<int:pk>", api.message_detail),
    path("api/messages/<int:pk>/release", api.message_release),
    path("", views.message_list),
    path("login", views.login_page),
    path("logout", views.logout_page),
    path("messages/<int:pk>", views.message_page),
    path("messages/<int:pk>/release", views.release_page),
    path("console.js", views.script),
    path("console.css", views.style),
    path("r/<str:token>", release_links.release_link),
]
