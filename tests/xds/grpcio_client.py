"""A real xDS client for the management server rig: gRPC C-core, through Python's grpcio.

Usage: grpcio_client.py TARGET CALLS

Resolves TARGET (``xds:///listener``) with the bootstrap named by ``GRPC_XDS_BOOTSTRAP``,
makes CALLS unary calls to ``grpc.health.v1.Health/Check`` (an empty request, sent as raw
bytes, so no generated code is needed), and prints as JSON how many calls each backend
answered, by the ``x-backend`` header the test servers add.
"""

import json
import sys

import grpc


def main() -> None:
    target, calls = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=None,
            response_deserializer=None,
        )
        answers: dict[str, int] = {}
        for _ in range(calls):
            _, call = check.with_call(b"", timeout=60, wait_for_ready=True)
            backend = dict(call.initial_metadata()).get("x-backend", "unknown")
            answers[backend] = answers.get(backend, 0) + 1
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
