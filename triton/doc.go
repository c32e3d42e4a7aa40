// Package triton is tusou's client for NVIDIA Triton (KServe v2 gRPC): the
// connection and readiness checks (Client), a start-up comparison of the
// served models with the configuration (Client.CheckModels), a generic
// dynamic micro-batcher (Batcher), and the CLIP encoders built on it
// (ImageEncoder, TextEncoder).
//
// Every error a caller can see is an *apierr.Error: Triton's queue full →
// Overloaded with RetryAfter; Triton unreachable, model missing or not ready
// → Unavailable with RetryAfter; deadline → Timeout; caller gone → Canceled;
// Triton rejecting or failing a request, or answering nonsense → BadGateway.
//
// Embeddings are returned exactly as the model computes them; L2
// normalisation belongs to the gateway.
//
// The gRPC stubs in triton/inferencepb are generated from triton/proto by
// scripts/gen-proto.sh and checked by scripts/check-proto-drift.sh.
package triton
