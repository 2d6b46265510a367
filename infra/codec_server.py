"""Codec server: lets someone who holds the key read encrypted payloads in the Temporal Web UI
or the `temporal` CLI, without the key ever leaving this machine.

It speaks the Temporal codec server protocol (as temporalio/samples-python `encryption/`):
`POST /encode` and `POST /decode` with JSON `{"payloads": [...]}`, CORS for the Web UI's origin
and the browser's `OPTIONS` preflight. Unlike the sample it does not decode for just anyone who
can reach the port: every request needs the token, as `Authorization: Bearer <token>` (the CLI:
`--codec-auth "Bearer <token>"`) or as the first path segment (`http://localhost:8081/<token>`,
because the Web UI's codec setting has no field for a custom header). Missing token: 401;
wrong token: 403. The token is `CODEC_SERVER_TOKEN`, else derived from the current key
(`infra.temporal.codec_server_token`), so holding the key is what grants access.

    .venv/bin/python -m infra.codec_server [--port 8081] [--host 127.0.0.1]   (`make codec-server`)
"""

from __future__ import annotations

import argparse
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from infra import codec, temporal
from infra.logs import install_log_masking
from infra.settings import Settings, settings

log = logging.getLogger("collections.codec_server")

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
MAX_BODY_BYTES = 32 * 1024 * 1024  # a long history's payloads, decoded in one request by the UI
CORS_HEADERS = "authorization,content-type,x-namespace"


def web_ui_origins(cfg: Settings) -> list[str]:
    """Origins allowed to call from a browser: the embedded Web UI's, and any configured."""
    port = cfg.temporal_ui_port
    extra = [o.strip().rstrip("/") for o in cfg.codec_server_origins.split(",") if o.strip()]
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}", *extra]


def build_app(payload_codec: codec.EncryptionCodec, token: str, origins: Iterable[str]) -> web.Application:
    """The codec server application around `payload_codec`, guarded by `token`."""
    if not token:
        raise ValueError("the codec server needs a token")
    allowed = frozenset(origins)
    expected = token.encode()

    def cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in allowed:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = CORS_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
            response.headers[hdrs.VARY] = "Origin"
        return response

    def refusal(request: web.Request) -> web.Response | None:
        """None when the request carries the right token, else the 401/403 to answer with."""
        presented = request.match_info.get("token")
        if presented is None:
            scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            presented = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        if presented is None:
            return web.json_response(
                {"error": "missing bearer token"}, status=401, headers={hdrs.WWW_AUTHENTICATE: "Bearer"}
            )
        if not hmac.compare_digest(presented.encode(), expected):
            return web.json_response({"error": "wrong token"}, status=403)
        return None

    async def preflight(request: web.Request) -> web.StreamResponse:
        # Browsers send the preflight without credentials; the POST that follows is checked.
        return cors(request, web.Response(status=204))

    def endpoint(transform: Transform, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            refused = refusal(request)
            if refused is not None:
                log.warning("%s refused (%s) from %s", name, refused.status, request.remote)
                return cors(request, refused)
            if request.content_type != "application/json":
                return cors(request, web.json_response({"error": "expected application/json"}, status=415))
            try:
                payloads = json_format.Parse(await request.read(), Payloads())
            except json_format.ParseError as exc:
                return cors(request, web.json_response({"error": f"not a payloads document: {exc}"}, status=400))
            try:
                result = Payloads(payloads=await transform(payloads.payloads))
            except (codec.CodecKeyError, codec.PayloadDecryptionError) as exc:
                return cors(request, web.json_response({"error": str(exc)}, status=422))
            log.info("%s: %d payloads", name, len(result.payloads))
            return cors(request, web.json_response(text=json_format.MessageToJson(result)))

        return handle

    encode, decode = endpoint(payload_codec.encode, "encode"), endpoint(payload_codec.decode, "decode")
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    for prefix in ("", "/{token}"):
        app.add_routes(
            [
                web.post(f"{prefix}/encode", encode),
                web.post(f"{prefix}/decode", decode),
                web.options(f"{prefix}/encode", preflight),
                web.options(f"{prefix}/decode", preflight),
            ]
        )
    return app


def main() -> None:
    cfg = settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=cfg.codec_server_port)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()
    sealing, token = temporal.payload_codec(), temporal.codec_server_token()
    if sealing is None or token is None:
        raise SystemExit(
            f"no codec key: set COLLECTIONS_CODEC_KEYS or create {cfg.codec_key_file} (`make run` does on first start)"
        )
    print(
        f"Codec server on http://{args.host}:{args.port} (key ids {', '.join(sealing.key_ids)}); "
        f"browser origins {', '.join(web_ui_origins(cfg))}",
        flush=True,
    )
    # No access log: the Web UI's endpoint carries the token in its path.
    web.run_app(
        build_app(sealing, token, web_ui_origins(cfg)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
