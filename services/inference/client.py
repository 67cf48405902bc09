"""Calling the inference service: a channel (plain or TLS), the token's metadata, a request."""

from __future__ import annotations

from pathlib import Path

import grpc

from services.inference import stubs

pb, pb_grpc = stubs.load()


def channel(address: str, ca: Path | None = None, tls: bool = False) -> grpc.Channel:
    """A channel to the service; TLS when ``tls`` or a CA certificate (PEM) is given."""
    options = [("grpc.max_receive_message_length", 4 << 20)]
    if tls or ca is not None:
        credentials = grpc.ssl_channel_credentials(ca.read_bytes() if ca is not None else None)
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def request(prompt: str = "", *, chat: list[tuple[str, str]] | None = None, **fields) -> pb.GenerateRequest:
    """A GenerateRequest from a prompt (or chat messages as (role, content)); fields left None are unset."""
    message = pb.GenerateRequest(**{k: v for k, v in fields.items() if v is not None})
    if chat is not None:
        message.chat.messages.extend(pb.ChatMessage(role=r, content=c) for r, c in chat)
    else:
        message.prompt = prompt
    return message
