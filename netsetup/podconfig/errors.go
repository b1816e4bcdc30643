package podconfig

import (
	"errors"
	"fmt"
)

// ErrInvalid marks an invalid pod configuration: permanent until the pod changes. Test with errors.Is.
var ErrInvalid = errors.New("invalid pod configuration")

// FieldError is an invalid value in a pod: the annotation key (or the field path of an istio-proxy
// setting), the offending value, and why it is refused.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: invalid value %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }
