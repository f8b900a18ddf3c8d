#!/bin/sh
# Regenerate the *_pb2.py/.pyi modules from the .proto files (run from the
# repository root; needs the dev extra's grpcio-tools).
set -e
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. estwisted/grpc/protos/*.proto
