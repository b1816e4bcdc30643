package contract

import "testing"

func TestCurrentNetnsID(t *testing.T) {
	a, err := CurrentNetnsID()
	if err != nil || a.Value == 0 {
		t.Fatalf("%v %v", a, err)
	}
	if b, _ := CurrentNetnsID(); a != b {
		t.Fatalf("identity changed: %v then %v", a, b)
	}
}
