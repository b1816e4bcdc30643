package podconfig

import (
	"fmt"
	"strconv"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// ErrInvalid marks an invalid pod configuration: permanent until the pod changes. Test with
// errors.Is. It matches every *FieldError and every *rules.LimitError (a list or annotation over
// its limit, or too many rules).
var ErrInvalid = rules.ErrInvalid

// FieldError is an invalid value in a pod: the annotation key (or the field path of an istio-proxy
// setting), the offending value, and why it is refused.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: invalid value %s: %s", e.Field, quote(e.Value), e.Reason)
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// maxQuoted bounds how much of a value an error message repeats: messages end up in events and
// annotations, and a value may be up to MaxValueBytes.
const maxQuoted = 128

// quote quotes s for a message, cut to its first maxQuoted bytes with its length when longer.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
