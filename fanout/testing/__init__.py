"""Test helpers for fanout: a local SageMaker Async Inference emulator (with S3, SQS and SNS).

``async with open_emulator(config) as emu:`` runs a real aiohttp server on 127.0.0.1 that speaks
sagemaker-runtime ``InvokeEndpointAsync``, an S3 subset, an SQS subset and SNS delivery into SQS, on
one port, with fault injection and counters. ``emu.env`` holds the variables that point the standard
AWS chain at it. ``fanout emulate`` (or ``python -m fanout.testing``) serves ``default_config()``,
with a config file applied on top (``load_config``). An endpoint's model is an async function, or a
model server under test that implements the SageMaker hosting contract (``ContainerModel``,
``fanout emulate --model-url``). The reference is ``docs/emulator.md``.

The defaults are AWS's, not kinder: notifications carry the inference response only when the
endpoint's ``include_inference_response_in`` asks for it (``default_config()`` does not). Faults
that clients must survive include notifications published before the 202 is written
(``NotificationFaults.early_rate``) and requests that take effect while their response is lost
(``FaultConfig.drop_response_rate``), besides throttling, 5xx, dropped connections and lost,
duplicated, delayed or malformed notifications.
"""

from ._container import ContainerModel, ContainerNotHealthy
from ._emu_config import (
    Distribution,
    EmulatorConfig,
    EndpointConfig,
    FaultConfig,
    Model,
    ModelResult,
    NotificationFaults,
    QueueConfig,
    SubscriptionConfig,
    ThrottleConfig,
    TopicConfig,
    config_from_dict,
    default_config,
    default_model,
    faults_from_dict,
    load_config,
)
from ._environ import aws_environment
from ._s3 import S3Store
from ._server import Emulator, open_emulator, run_emulator_process, serve
from ._sns import SnsHub
from ._sqs import SqsStore

__all__ = [
    "ContainerModel",
    "ContainerNotHealthy",
    "Distribution",
    "Emulator",
    "EmulatorConfig",
    "EndpointConfig",
    "FaultConfig",
    "Model",
    "ModelResult",
    "NotificationFaults",
    "QueueConfig",
    "S3Store",
    "SnsHub",
    "SqsStore",
    "SubscriptionConfig",
    "ThrottleConfig",
    "TopicConfig",
    "aws_environment",
    "config_from_dict",
    "default_config",
    "default_model",
    "faults_from_dict",
    "load_config",
    "open_emulator",
    "run_emulator_process",
    "serve",
]
