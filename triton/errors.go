package triton

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tusou/tusou/apierr"
)

// Error codes (apierr.Error.Code) returned by this package. They are stable:
// dashboards and clients may key on them.
const (
	CodeUnavailable     = "triton_unavailable"       // cannot reach Triton / connection failed
	CodeNotReady        = "triton_not_ready"         // server or model not ready (loading, unloading)
	CodeModelNotFound   = "triton_model_not_found"   // Triton does not know the model (name/version)
	CodeOverloaded      = "triton_overloaded"        // Triton's queue is full
	CodeQueueFull       = "triton_batch_queue_full"  // tusou's own batch queue is full
	CodeShuttingDown    = "triton_shutting_down"     // the batcher is closed
	CodeTimeout         = "triton_timeout"           // the deadline passed before Triton answered
	CodeCanceled        = "triton_canceled"          // the caller went away
	CodeBadResponse     = "triton_bad_response"      // Triton answered something tusou cannot use
	CodeUpstreamError   = "triton_error"             // Triton refused or failed the request
	CodeModelMismatch   = "triton_model_mismatch"    // model metadata differs from the configuration
	CodeInvalidInput    = "triton_invalid_input"     // the caller passed a tensor of the wrong size
	CodeMessageTooLarge = "triton_message_too_large" // reply above max_recv_msg_bytes
	CodeInternal        = "triton_internal"          // a bug in this package
)

// mapError turns an error from a gRPC call on model (may be empty) into an
// *apierr.Error, and says whether resending the same request is safe and
// useful. ctx is the call's context: it tells a caller's cancellation apart
// from a connection that went away.
func mapError(ctx context.Context, model string, err error, retryAfter time.Duration) (*apierr.Error, bool) {
	if err == nil {
		return nil, false
	}
	if ae := apierr.As(err); ae != nil {
		return ae, false
	}
	what := "Triton"
	if model != "" {
		what = "Triton model " + model
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: context errors from our own waits, or a bug.
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return apierr.Wrap(err, apierr.Timeout, CodeTimeout, "%s did not answer in time", what), false
		case errors.Is(err, context.Canceled):
			return apierr.Wrap(err, apierr.Canceled, CodeCanceled, "request to %s canceled", what), false
		}
		return apierr.Wrap(err, apierr.Internal, CodeInternal, "calling %s failed", what), false
	}
	msg := st.Message()
	lower := strings.ToLower(msg)
	switch st.Code() {
	case codes.OK:
		return nil, false
	case codes.Canceled:
		// grpc-go reports Canceled both for the caller's context and for a
		// connection closed under the call (client shutting down).
		if ctx != nil && ctx.Err() == nil {
			return apierr.Wrap(err, apierr.Unavailable, CodeUnavailable, "connection to %s closed", what).WithRetryAfter(retryAfter), false
		}
		return apierr.Wrap(err, apierr.Canceled, CodeCanceled, "request to %s canceled", what), false
	case codes.DeadlineExceeded:
		return apierr.Wrap(err, apierr.Timeout, CodeTimeout, "%s did not answer in time", what), false
	case codes.Unavailable:
		return mapUnavailable(ctx, err, what, lower, retryAfter)
	case codes.NotFound:
		return apierr.Wrap(err, apierr.Unavailable, CodeModelNotFound, "%s not found on the server", what).WithRetryAfter(retryAfter), false
	case codes.ResourceExhausted:
		if strings.Contains(lower, "larger than max") {
			// grpc-go's own limit: a config problem, retrying cannot help.
			return apierr.Wrap(err, apierr.BadGateway, CodeMessageTooLarge, "%s reply exceeds max_recv_msg_bytes", what), false
		}
		return apierr.Wrap(err, apierr.Overloaded, CodeOverloaded, "%s is overloaded", what).WithRetryAfter(retryAfter), false
	case codes.InvalidArgument:
		return apierr.Wrap(err, apierr.BadGateway, CodeUpstreamError, "%s rejected the request: %s", what, msg), false
	case codes.Unimplemented:
		return apierr.Wrap(err, apierr.BadGateway, CodeUpstreamError, "%s does not implement the call: %s", what, msg), false
	default:
		// INTERNAL, UNKNOWN, DATA_LOSS, FAILED_PRECONDITION, ... from the
		// server: the model failed on this input or the server is broken.
		return apierr.Wrap(err, apierr.BadGateway, CodeUpstreamError, "%s failed: %s", what, msg), false
	}
}

// queueTimeoutSlack is how close to the caller's deadline a Triton queue
// timeout counts as the caller's deadline expiring (the timeout parameter is
// computed before the request travels, so Triton's clock runs a little ahead).
const queueTimeoutSlack = 50 * time.Millisecond

// mapUnavailable sorts UNAVAILABLE, which Triton uses for a full queue, a
// queue timeout, an unknown or unready model and which grpc-go uses for a
// failed connection. Only the last is worth resending.
func mapUnavailable(ctx context.Context, err error, what, lower string, retryAfter time.Duration) (*apierr.Error, bool) {
	switch {
	case strings.Contains(lower, "exceeds maximum queue size"), strings.Contains(lower, "queue is full"),
		strings.Contains(lower, "queue full"):
		// Never resend at once: that only adds load to a full queue.
		return apierr.Wrap(err, apierr.Overloaded, CodeOverloaded, "%s queue is full", what).WithRetryAfter(retryAfter), false
	case strings.Contains(lower, "timeout expired"):
		// Triton's queue policy dropped the request ("Request timeout
		// expired"). If the caller's deadline (sent as the timeout parameter)
		// is what expired, that is a Timeout. If the caller still has time,
		// Triton shed load under its own default queue timeout: Overloaded.
		// (Not matching "timed out": that is also the kernel's ETIMEDOUT text
		// in a failed dial, a connection error.)
		if ctx != nil && ctx.Err() == nil {
			if d, ok := ctx.Deadline(); !ok || time.Until(d) > queueTimeoutSlack {
				return apierr.Wrap(err, apierr.Overloaded, CodeOverloaded, "%s is overloaded (request expired in its queue)", what).WithRetryAfter(retryAfter), false
			}
		}
		return apierr.Wrap(err, apierr.Timeout, CodeTimeout, "%s timed out in the server queue", what), false
	case strings.Contains(lower, "unknown model"), strings.Contains(lower, "is not found"):
		// Triton answers an unknown model name with UNAVAILABLE, not NOT_FOUND.
		return apierr.Wrap(err, apierr.Unavailable, CodeModelNotFound, "%s not found on the server", what).WithRetryAfter(retryAfter), false
	case strings.Contains(lower, "not ready"), strings.Contains(lower, "no available versions"),
		strings.Contains(lower, "unavailable model"):
		return apierr.Wrap(err, apierr.Unavailable, CodeNotReady, "%s is not ready", what).WithRetryAfter(retryAfter), false
	}
	// Connection refused/reset, GOAWAY, transport closing: the request may
	// not have reached the server and inference is idempotent, so resend.
	return apierr.Wrap(err, apierr.Unavailable, CodeUnavailable, "cannot reach %s", what).WithRetryAfter(retryAfter), true
}
