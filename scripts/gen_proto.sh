#!/usr/bin/env bash
# Regenerate the go-api's Go code from docker/go-api/work.proto (the output is committed, so a
# normal set-up needs none of these tools): protoc from grpcio-tools, and protoc-gen-go
# and protoc-gen-go-grpc from `go install` (google.golang.org/protobuf/cmd/protoc-gen-go,
# google.golang.org/grpc/cmd/protoc-gen-go-grpc) on PATH. The load generator has no
# generated code: it compiles the .proto files it is given at the start of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -m grpc_tools.protoc -I docker/go-api \
  --go_out=docker/go-api --go_opt=module=chaoslab.dev/go-api \
  --go-grpc_out=docker/go-api --go-grpc_opt=module=chaoslab.dev/go-api \
  docker/go-api/work.proto
