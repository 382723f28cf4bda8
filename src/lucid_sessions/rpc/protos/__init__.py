"""Generated protobuf and gRPC code (scripts/gen-protos); do not edit by hand."""
