package controller

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateReason(t *testing.T) {
	short := "no namespace holds 10.1.0.5"
	if truncate(short) != short {
		t.Fatal("short reason changed")
	}
	long := strings.Repeat("é", maxReason) // 2 bytes each: the cut falls inside a rune
	got := truncate(long)
	if len(got) > maxReason || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Fatalf("truncated to %d bytes, valid UTF-8 %v, suffix %q", len(got), utf8.ValidString(got), got[len(got)-6:])
	}
}
