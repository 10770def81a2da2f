"""Generated from docker/go-api/work.proto by scripts/gen_proto.sh: do not edit."""
