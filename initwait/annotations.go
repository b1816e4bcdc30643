package initwait

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// maxFileSize bounds what readAnnotations reads. Annotations total at most 256 KiB; Go quoting can
// expand a byte to \u escapes, so allow a generous multiple.
const maxFileSize = 8 << 20

// ParseAnnotations parses a downward-API annotations file in the kubelet's format: one key="value"
// per line, the value quoted as Go's %q does (strconv.Unquote reverses it), no limit on line length.
// Blank lines are ignored. A line without '=', an empty key, a value that is not a complete Go
// string literal, or a repeated key is an error: callers treat such a file as not ready yet (for
// example half-written by something other than the kubelet's atomic writer).
func ParseAnnotations(data []byte) (map[string]string, error) {
	out := map[string]string{}
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		key, quoted, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			return nil, fmt.Errorf("line %d: %q has no '=' between key and value", lineNo, clip(line))
		}
		if len(key) == 0 {
			return nil, fmt.Errorf("line %d: %q has an empty key", lineNo, clip(line))
		}
		value, err := strconv.Unquote(string(quoted))
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %q is not a complete Go-quoted string: %q", lineNo, clip(key), clip(quoted))
		}
		if _, dup := out[string(key)]; dup {
			return nil, fmt.Errorf("line %d: key %q appears twice", lineNo, clip(key))
		}
		out[string(key)] = value
	}
	return out, nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const limit = 80
	if len(b) <= limit {
		return string(b)
	}
	return string(b[:limit]) + "..."
}

// errNoFile reports that the annotations file does not exist (yet).
var errNoFile = errors.New("annotations file does not exist yet")

// readAnnotations reads the whole file at path (following the kubelet's symlinks).
func readAnnotations(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoFile
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}
