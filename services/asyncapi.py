"""AsyncAPI factory: the Kafka channels of gateway, workers and analytics, as one document.

`make asyncapi` runs `faststream docs gen --factory services.asyncapi:create_app`.
"""

from faststream import FastStream
from faststream.specification import AsyncAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from services.analytics.app import add_usage_subscriber
from services.analytics.settings import AnalyticsSettings
from services.gateway.publish import RequestPublisher
from services.inference.app import build_broker
from services.inference.settings import InferenceSettings


def create_app() -> FastStream:
    settings = InferenceSettings(topic_prefix="")
    broker = build_broker(settings, [], CollectorRegistry(), TracerProvider()).broker
    RequestPublisher(broker, settings.topics)  # the gateway's side of the same channels
    add_usage_subscriber(broker, AnalyticsSettings(topic_prefix=""), sink=None)  # analytics
    return FastStream(
        broker,
        specification=AsyncAPI(
            title="tokenbus",
            version="0.1.0",
            description="Kafka topics of tokenbus: requests, token streams, control and usage.",
        ),
    )
