package initwait

import (
	"maps"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// kubeletSample is a file as the kubelet writes it (fieldpath.FormatMap): sorted keys, %q values, no
// trailing newline.
const kubeletSample = `kubectl.kubernetes.io/last-applied-configuration="{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n"
pod-network-controller.istio.io/netns="cookie:4097"
pod-network-controller.istio.io/reason="bad value \"x\" for traffic.sidecar.istio.io/excludeInboundPorts"
pod-network-controller.istio.io/status="ready"
unicode.example.com/name="héllo ✓ 日本"
weird.example.com/ctl="\x00\a\x7f\xff\u200b"`

func TestParseAnnotationsKubeletFormat(t *testing.T) {
	got, err := ParseAnnotations([]byte(kubeletSample))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n",
		contract.KeyNetns:          "cookie:4097",
		contract.KeyReason:         `bad value "x" for traffic.sidecar.istio.io/excludeInboundPorts`,
		contract.KeyStatus:         "ready",
		"unicode.example.com/name": "héllo ✓ 日本",
		"weird.example.com/ctl":    "\x00\a\x7f\xff\u200b",
	}
	if !maps.Equal(got, want) {
		t.Errorf("ParseAnnotations:\n got %q\nwant %q", got, want)
	}
}

func TestParseAnnotationsRoundTrip(t *testing.T) {
	big := strings.Repeat("0123456789abcdef\"\n\\é", 200*1024/21+1) // > 200 KiB, quotes, newlines, unicode
	cases := map[string]map[string]string{
		"empty":              {},
		"escaped quotes":     {"a/b": `say "hi" and \"bye\"`},
		"newlines":           {"a/b": "line1\nline2\r\n\n"},
		"unicode":            {"a/b": "ünïcødé ✓ 日本語 🚀", "c": "\u2028\u00a0"},
		"invalid utf-8":      {"a/b": "\xff\xfe\x80"},
		"empty value":        {"a/b": ""},
		"value with equals":  {"a/b": "x=y=z"},
		"unknown keys":       {"example.com/unknown": "1", "other": "2", contract.KeyStatus: "pending"},
		"200 KiB value":      {"big.example.com/blob": big, contract.KeyStatus: "ready"},
		"many small entries": manyEntries(2000),
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			data := waittest.Format(ann)
			got, err := ParseAnnotations(data)
			if err != nil {
				t.Fatalf("ParseAnnotations(Format(%d annotations)): %v", len(ann), err)
			}
			if !maps.Equal(got, ann) {
				t.Errorf("round trip changed the annotations:\n got %.200q\nwant %.200q", got, ann)
			}
		})
	}
}

func manyEntries(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m["example.com/k"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = strings.Repeat("v", i)
	}
	return m
}

func TestParseAnnotationsTolerant(t *testing.T) {
	got, err := ParseAnnotations([]byte("\n a=\"1\"\n\n\nb=\"2\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The parser keeps a key exactly as written, leading blank included.
	if want := map[string]string{" a": "1", "b": "2"}; !maps.Equal(got, want) { //nolint:gocritic // mapKey: the blank is the point
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseAnnotationsErrors(t *testing.T) {
	cases := []struct {
		name, in, wantErr string
	}{
		{"no equals", "a=\"1\"\nhalf-written-key", `line 2: "half-written-key" has no '='`},
		{"empty key", `="1"`, `line 1: "=\"1\"" has an empty key`},
		{"unterminated value", `a/b="read`, `line 1: value of "a/b" is not a complete Go-quoted string: "\"read"`},
		{"nothing after equals", `a/b=`, `value of "a/b" is not a complete Go-quoted string: ""`},
		{"unquoted value", `a/b=ready`, `value of "a/b" is not a complete Go-quoted string: "ready"`},
		{"trailing garbage", `a/b="x" y`, `value of "a/b" is not a complete Go-quoted string`},
		{"bad escape", `a/b="\q"`, `value of "a/b" is not a complete Go-quoted string`},
		{"duplicate", "a=\"1\"\na=\"2\"", `line 2: key "a" appears twice`},
		{"long line clipped", "k=\"" + strings.Repeat("z", 1000), `"\"zzzzzzzz`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAnnotations([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseAnnotations(%.60q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long: quoted input must be clipped", len(err.Error()))
			}
		})
	}
}

// TestParseAnnotationsHalfWritten cuts a kubelet file at every byte: a prefix must either fail to
// parse (not ready yet) or parse to a subset of the complete annotations with identical values,
// never to a different value.
func TestParseAnnotationsHalfWritten(t *testing.T) {
	full := map[string]string{
		contract.KeyFamilies:                "ipv4,ipv6",
		contract.KeyNetns:                   "cookie:123456789",
		contract.KeyReason:                  "quote \" newline \n unicode ✓",
		contract.KeyStatus:                  "ready",
		istioapi.AnnotationInterceptionMode: "NONE",
	}
	data := waittest.Format(full)
	complete := 0
	for n := range len(data) + 1 {
		got, err := ParseAnnotations(data[:n])
		if err != nil {
			continue
		}
		complete++
		for k, v := range got {
			if full[k] != v {
				t.Fatalf("prefix of %d bytes parsed %q=%q, the complete file has %q", n, k, v, full[k])
			}
		}
	}
	// The empty prefix, each complete line, and each of the newlines between lines.
	if want := 1 + len(full) + len(full) - 1; complete != want {
		t.Errorf("%d prefixes parsed, want %d (the empty file, and each complete line with and without its newline)", complete, want)
	}
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add([]byte(kubeletSample))
	f.Add([]byte(""))
	f.Add([]byte("a=\"b\"\nc=\"d"))
	f.Add(waittest.Format(map[string]string{contract.KeyStatus: "failed", contract.KeyReason: "x\ny\"z"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseAnnotations(data)
		if err != nil {
			return
		}
		// Whatever parses must survive the kubelet's formatting unchanged.
		again, err := ParseAnnotations(waittest.Format(got))
		if err != nil {
			t.Fatalf("re-parsing the formatted result of %q: %v", data, err)
		}
		if !maps.Equal(got, again) {
			t.Fatalf("round trip of %q: %q became %q", data, got, again)
		}
	})
}

func FuzzParseAnnotationsRoundTrip(f *testing.F) {
	f.Add(contract.KeyReason, "quote \" newline \n unicode ✓ \xff")
	f.Add("k", "")
	f.Fuzz(func(t *testing.T, key, value string) {
		if key == "" || strings.ContainsAny(key, "=\n") {
			return // not an annotation key
		}
		want := map[string]string{key: value, contract.KeyStatus: "ready"}
		got, err := ParseAnnotations(waittest.Format(want))
		if err != nil {
			t.Fatalf("ParseAnnotations(Format(%q)): %v", want, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
	})
}
