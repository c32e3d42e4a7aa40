package apierr

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

func TestWrapAndFind(t *testing.T) {
	e := Wrap(io.ErrUnexpectedEOF, Unprocessable, "image_corrupt", "the %s image is truncated", "jpeg").WithRetryAfter(time.Second)
	outer := fmt.Errorf("ingest: %w", e)
	if got := As(outer); got != e {
		t.Fatalf("As did not find the error through wrapping: %v", got)
	}
	if KindOf(outer) != Unprocessable || !errors.Is(outer, io.ErrUnexpectedEOF) {
		t.Fatalf("kind %v, cause lost: %v", KindOf(outer), outer)
	}
	if e.Message != "the jpeg image is truncated" || e.RetryAfter != time.Second {
		t.Fatalf("message %q retry %v", e.Message, e.RetryAfter)
	}
	if KindOf(io.EOF) != Internal || As(io.EOF) != nil {
		t.Fatal("plain errors must be Internal")
	}
	if Overloaded.String() != "overloaded" || Kind(99).String() != "kind(99)" {
		t.Fatal("kind names")
	}
}
