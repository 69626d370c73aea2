"""ms-swift's `swift deploy` server, run in this process so that the API key never is a command-line argument
(visible to every user of the machine) nor in ms-swift's `args:` log line, with the serve command's guards:
the key (401), a request size limit (413/411) and the test set's number of images per request (400)."""
import asyncio
import secrets
from http import HTTPStatus

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from swift.infer_engine.protocol import ChatCompletionRequest
from swift.pipelines.infer.deploy import SwiftDeploy

from stages.serving.checks import image_count_problem, image_problems, image_values, validation_message


def error(status: HTTPStatus, message: str, **headers) -> JSONResponse:
    """ms-swift's error body ({"message", "object": "error"}), with the status that says what went wrong."""
    return JSONResponse({"message": message, "object": "error"}, int(status), headers=headers or None)


class Server(SwiftDeploy):
    # requests whose images are checked at once: each decodes at most (images x max_pixels), so this bounds the memory
    # the checks take under many concurrent requests
    DECODING_AT_ONCE = 2

    def __init__(self, argv: list[str], key: str | None, image_counts: set[int], max_request_bytes: int,
                 model_type: str, most_pixels: int):
        self._key = key.encode() if key else None
        self._model_type, self._most_pixels = model_type, most_pixels
        self._decoding = asyncio.Semaphore(self.DECODING_AT_ONCE)
        self._image_counts = image_counts
        self._max_request_bytes = max_request_bytes
        super().__init__(argv)
        self.infer_engine.model_name = self.args.served_model_name   # ms-swift answers with the folder's name

        @self.app.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError):
            return error(HTTPStatus.UNPROCESSABLE_ENTITY, validation_message(exc.errors()))

    def _install_auth_middleware(self):
        """Replaces ms-swift's (a 400 for a wrong key, and the key read from its args)."""
        limit = self._max_request_bytes

        @self.app.middleware("http")
        async def guard(request: Request, call_next):
            if self._key:   # every route, /v1/models and /health too: ms-swift's exempts those
                sent = request.headers.get("authorization", "")
                if not (sent.startswith("Bearer ") and secrets.compare_digest(sent[7:].encode(), self._key)):
                    return error(HTTPStatus.UNAUTHORIZED, "missing or wrong API key: send the server's key as "
                                 "'Authorization: Bearer <key>' (the openai client's api_key)",
                                 **{"WWW-Authenticate": "Bearer"})
            if request.method == "POST":
                length = request.headers.get("content-length")
                if length is None or not length.isdigit():
                    return error(HTTPStatus.LENGTH_REQUIRED, "send the request with a Content-Length header")
                if int(length) > limit:
                    return error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                 f"the request is {int(length) / 2**20:.1f} MiB; this server accepts at most "
                                 f"{limit / 2**20:g} MiB (serve --max_request_mb): send smaller images")
            return await call_next(request)

    def _warn_if_unauthenticated(self):
        """The serve command refuses to listen beyond this machine without a key, before it gets here."""

    async def create_chat_completion(self, request: ChatCompletionRequest, raw_request: Request, *,
                                     return_cmpl_response: bool = False):
        images = image_values(request.messages, request.images)
        wrong_count = image_count_problem(len(images), self._image_counts)
        # decoding a large image must not hold up the other requests: off the event loop
        async with self._decoding:
            problems = await asyncio.to_thread(image_problems, images, self._model_type, self._most_pixels)
        problems = ([wrong_count] if wrong_count else []) + problems
        if problems:
            return error(HTTPStatus.BAD_REQUEST, "; ".join(problems))
        return await super().create_chat_completion(request, raw_request, return_cmpl_response=return_cmpl_response)
