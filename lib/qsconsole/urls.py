"""The console's URLs: the pages, and the JSON API under /api/."""

from django.urls import path

from qsconsole.console import actions_api, api, charts, list_pages, lists_api, release_links, stats, views

urlpatterns = [
    path("api/login", api.login_view),
    path("api/logout", api.logout_view),
    path("api/me", api.me_view),
    path("api/messages", api.message_list),
    path("api/messages/<int:pk>", api.message_detail),
    path("api/messages/<int:pk>/release", actions_api.message_release),
    path("api/messages/<int:pk>/delete", actions_api.message_delete),
    path("api/messages/<int:pk>/download", actions_api.message_download),
    path("api/messages/<int:pk>/learn", actions_api.message_learn),
    path("api/lists", lists_api.list_or_add),
    path("api/lists/<int:pk>/delete", lists_api.delete),
    path("api/stats", stats.stats_api),
    path("", views.message_list),
    path("login", views.login_page),
    path("logout", views.logout_page),
    path("messages/<int:pk>", views.message_page),
    path("messages/<int:pk>/release", views.release_page),
    path("messages/<int:pk>/delete", views.delete_page),
    path("messages/<int:pk>/learn", views.learn_page),
    path("lists", list_pages.lists_page),
    path("lists/add", list_pages.add_page),
    path("lists/<int:pk>/delete", list_pages.delete_page),
    path("charts", charts.charts_page),
    path("console.js", views.script),
    path("console.css", views.style),
    path("r/<str:token>", release_links.release_link),
]
