"""Generated protobuf/gRPC modules: run `mmrag proto generate` after editing proto/."""
