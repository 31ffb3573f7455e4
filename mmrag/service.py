"""Process wiring every deployable shares: settings (with --print-config), logging, probes, signals, run."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from mmrag.kafka_security import EXIT_CONFIG, access_error, check_kafka_access
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes, setup_logging
from mmrag.tracing import flush_spans, setup_tracing

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseServiceSettings)


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def install_stop_signals(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def settings_epilog(settings_cls: type[BaseSettings]) -> str:
    """Every setting of ``settings_cls`` as its environment variable, default and description (for --help)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    lines = ["settings (environment variables, default in brackets):"]
    for name, field in sorted(settings_cls.model_fields.items()):
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = f"{field.default_factory()} here"  # type: ignore[call-arg]
        elif isinstance(field.default, SecretStr):
            default = "secret" if field.default.get_secret_value() else "unset"
        elif field.default is None or field.default == "":
            default = "unset"
        else:
            default = str(field.default)
        lines.append(f"  {prefix}{name.upper()} [{default}]")
        if field.description:
            lines += textwrap.wrap(field.description, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def service_main(
    name: str, settings_cls: type[S], build: Callable[[S, Probes], Runnable], argv: Sequence[str] | None = None
) -> int:
    """Parses ``--print-config``, validates settings from the environment, serves probes, runs until a signal."""
    parser = argparse.ArgumentParser(
        prog=name,
        description=f"kafka-mmrag {name} (settings: MMRAG_* env vars)",
        epilog=settings_epilog(settings_cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--print-config", action="store_true", help="print the settings (secrets masked) and exit")
    args = parser.parse_args(argv)
    settings = settings_cls()
    if args.print_config:
        print(settings.printable())
        return 0
    setup_logging(settings.log_level)
    faulthandler.enable()  # a crash in a native library (SIGSEGV, SIGILL) leaves its Python stack in the log
    setup_tracing(name, instance_id=settings.instance_id)  # exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    probes = Probes(name)
    probes.serve(settings.probe_host, settings.probe_port, settings.probe_tls_cert, settings.probe_tls_key)
    stop = threading.Event()
    install_stop_signals(stop)
    component = build(settings, probes)
    try:
        check_kafka_access(settings, settings.bootstrap_servers)
        component.run(stop)
    except Exception as exc:
        if (denied := access_error(exc)) is not None:  # a deployment error: one line, no traceback, no restart storm
            probes.set_dead(str(denied))
            log.error("%s", denied)
            return EXIT_CONFIG
        probes.set_dead(str(exc))
        log.exception("%s stopped on an error", name)
        return 1
    finally:
        probes.close()
        flush_spans()
    return 0
