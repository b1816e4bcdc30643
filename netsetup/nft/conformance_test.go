package nft

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/test/conformance/istio/cases"
)

// goldenDir holds Istio's nftables goldens (tools/istio-nftables/pkg/capture/testdata) and our
// cases.json naming each one's configuration.
var goldenDir = filepath.Join("..", "..", "test", "conformance", "istio", "nftables")

func loadCases(t *testing.T) []cases.Case {
	t.Helper()
	cs, err := cases.Load(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 28 {
		t.Fatalf("nftables/cases.json lists %d cases, want 28", len(cs))
	}
	return cs
}

func golden(t *testing.T, c cases.Case) string {
	t.Helper()
	data, err := os.ReadFile(c.Golden)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestGoldens renders every configuration of nftables/cases.json as nft text and compares it
// with Istio's golden line for line.
func TestGoldens(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			rs, err := Generate(c.Config)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimRight(golden(t, c), "\n"), "\n")
			got := strings.Split(strings.TrimRight(rs.Text(), "\n"), "\n")
			for i := 0; i < max(len(want), len(got)); i++ {
				var w, g string
				if i < len(want) {
					w = want[i]
				}
				if i < len(got) {
					g = got[i]
				}
				if w != g {
					t.Fatalf("line %d differs:\n want %q\n  got %q\nfull output:\n%s", i+1, w, g, rs.Text())
				}
			}
		})
	}
}
