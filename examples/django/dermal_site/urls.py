"""Routes: the upload page, the prediction API, health and memory."""
from django.urls import path

from classifier import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/predict", views.predict, name="predict"),
    path("health", views.health, name="health"),
    path("memory", views.memory, name="memory"),
]

handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error
