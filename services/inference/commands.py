"""`afina serve`, `afina generate` and `afina search`: the service and its command-line client
(imports stay lazy, so the CLI starts fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from services import logs
from services.settings import Settings

FINISH = {1: "end of text", 2: "stop sequence", 3: "length"}


def serve() -> None:
    """Run the inference service: gRPC on AFINA_INFERENCE_ADDRESS, serving the champion, until SIGTERM."""
    from services.inference.service import run

    logs.configure("inference")
    run(Settings())


def generate(
    prompt: str = typer.Argument(..., help="The text to continue (or, with --chat, the user's message)."),
    stream: bool = typer.Option(False, "--stream", help="Print the text as it is generated."),
    version: int | None = typer.Option(None, "--version", help="Model version (default: the champion)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Tokens to generate at most."),
    temperature: float | None = typer.Option(None, help="0: greedy; default 1."),
    top_p: float | None = typer.Option(None, "--top-p"),
    top_k: int | None = typer.Option(None, "--top-k"),
    seed: int | None = typer.Option(None, help="The same seed samples the same text."),
    stop: list[str] = typer.Option([], "--stop", help="Stop before this text (repeatable)."),
    chat: bool = typer.Option(False, "--chat", help="Send the prompt as a user message of a chat."),
    retrieve: bool = typer.Option(False, "--retrieve", help="Ground the answer in passages of the documents and "
                                  "print their citations."),
    k: int = typer.Option(0, "--k", help="Passages to retrieve (0: the server's AFINA_RETRIEVAL_TOP_K)."),
    address: str = typer.Option("", help="host:port (default AFINA_INFERENCE_ADDRESS)."),
    ca: Path | None = typer.Option(None, help="CA certificate (PEM) for TLS (default AFINA_INFERENCE_TLS_CERT)."),
    timeout: float = typer.Option(120.0, help="Seconds before the call is given up."),
) -> None:
    """Generate text with the inference service (the token comes from AFINA_INFERENCE_TOKEN)."""
    import grpc

    from services.inference import client

    settings = Settings()
    ca = ca or settings.inference.tls_cert
    request = client.request(prompt, chat=[("user", prompt)] if chat else None, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop or None,
                             model_version=version)
    if retrieve:
        request.retrieval.k = k
        request.retrieval.SetInParent()
    with client.channel(address or settings.inference.address, ca=ca) as channel:
        stub = client.pb_grpc.InferenceServiceStub(channel)
        call = dict(timeout=timeout, metadata=client.metadata(settings.inference.token))
        try:
            if stream:
                for message in stub.GenerateStream(request, **call):
                    sys.stdout.write(message.delta)
                    sys.stdout.flush()
                    last = message
                sys.stdout.write("\n")
            else:
                last = stub.Generate(request, **call)
                typer.echo(last.text)
        except grpc.RpcError as exc:
            typer.secho(f"afina generate: {exc.code().name}: {exc.details()}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    typer.echo(f"[v{last.model_version}, {FINISH.get(last.finish_reason, '?')}, {last.usage.prompt_tokens}+"
               f"{last.usage.completion_tokens} tokens, first token {last.timings.first_token_ms:.0f} ms, "
               f"total {last.timings.total_ms:.0f} ms]", err=True)
    for i, cited in enumerate(last.citations, 1):
        typer.echo(f"[{i}] {_where(cited)}", err=True)


def _where(passage) -> str:
    section = (f", {passage.section!r}" if passage.section else "") + (f", page {passage.page}" if passage.page else "")
    return f"{passage.source_id} (chunk {passage.chunk}, passage {passage.passage}{section}; {passage.stability})"


def search(
    query: str = typer.Argument(..., help="What to look for, in any language."),
    k: int = typer.Option(5, "--k", help="Passages to return."),
    language: str = typer.Option("", help="Only passages in this language (e.g. es)."),
    stability: str = typer.Option("", help="Only master or only volatile documents."),
    source_prefix: str = typer.Option("", "--source-prefix", help="Only documents whose source id starts so."),
    address: str = typer.Option("", help="host:port (default AFINA_INFERENCE_ADDRESS)."),
    ca: Path | None = typer.Option(None, help="CA certificate (PEM) for TLS (default AFINA_INFERENCE_TLS_CERT)."),
    timeout: float = typer.Option(30.0, help="Seconds before the call is given up."),
) -> None:
    """Search the documents' passages (hybrid: vectors and BM25) through the inference service."""
    import grpc

    from services.inference import client

    settings = Settings()
    request = client.pb.RetrieveRequest(query=query, k=k, filters=client.pb.RetrieveFilters(
        language=language, stability=stability, source_prefix=source_prefix))
    with client.channel(address or settings.inference.address, ca=ca or settings.inference.tls_cert) as channel:
        try:
            found = client.pb_grpc.InferenceServiceStub(channel).Retrieve(
                request, timeout=timeout, metadata=client.metadata(settings.inference.token))
        except grpc.RpcError as exc:
            typer.secho(f"afina search: {exc.code().name}: {exc.details()}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    for i, passage in enumerate(found.passages, 1):
        typer.echo(f"[{i}] {passage.score:.4f}  {_where(passage)}")
        typer.echo("    " + passage.text.replace("\n", " ")[:400])
    if not found.passages:
        typer.echo("no passages found")
