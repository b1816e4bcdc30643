package iptablestest_test

// The cases both the fake's own tests and the differential test against the real tools run: each
// is a sequence of "restore --noflush" inputs applied to a namespace whose nat table holds
// ISTIO_A (one RETURN rule) jumped to from OUTPUT.

const seed = `*nat
:ISTIO_A - [0:0]
-A ISTIO_A -j RETURN
-A OUTPUT -j ISTIO_A
COMMIT
`

type restoreCase struct {
	name  string
	input string
	code  int    // the exit code both backends give (0: accepted)
	codes [2]int // when the backends differ: nft, legacy
}

// exit returns the expected exit code for a backend.
func (c restoreCase) exit(backend string) int {
	if c.codes != [2]int{} {
		if backend == "nft" {
			return c.codes[0]
		}
		return c.codes[1]
	}
	return c.code
}

var restoreCases = []restoreCase{
	{name: "new chain that exists", input: "*nat\n-N ISTIO_A\nCOMMIT\n", code: 1},
	{name: "delete a missing rule", input: "*nat\n-A ISTIO_A -j ACCEPT\n-D ISTIO_A -p tcp -j RETURN\nCOMMIT\n", code: 1},
	{name: "delete in canonical form", input: "*nat\n-A ISTIO_A -p tcp --dport 1 -j RETURN\n-D ISTIO_A -p tcp -m tcp --dport 1 -j RETURN\nCOMMIT\n"},
	{name: "delete by number", input: "*nat\n-D ISTIO_A 1\nCOMMIT\n"},
	{name: "jump to a missing chain", input: "*nat\n-A ISTIO_A -j ISTIO_NOPE\nCOMMIT\n", code: 2},
	{name: "jump to a chain declared later", input: "*nat\n-A ISTIO_A -j ISTIO_B\n:ISTIO_B - [0:0]\nCOMMIT\n", code: 2},
	{name: "second table fails, first stays", input: "*mangle\n:ISTIO_M - [0:0]\n-A ISTIO_M -j RETURN\nCOMMIT\n*nat\n-A ISTIO_A -j ISTIO_NOPE\nCOMMIT\n", code: 2},
	{name: "fails half-way: nothing of the table applied", input: "*nat\n:ISTIO_A - [0:0]\n-A ISTIO_A -p tcp -j REDIRECT --to-ports 15001\n-N ISTIO_A\nCOMMIT\n", code: 1},
	{name: "delete a chain with rules", input: "*nat\n-X ISTIO_A\nCOMMIT\n", codes: [2]int{4, 1}},
	{name: "delete a chain still jumped to", input: "*nat\n:ISTIO_A - [0:0]\n-X ISTIO_A\nCOMMIT\n", codes: [2]int{4, 1}},
	{name: "delete a built-in chain", input: "*nat\n-X OUTPUT\nCOMMIT\n", codes: [2]int{4, 1}},
	{name: "flush, unhook, delete", input: "*nat\n:ISTIO_A - [0:0]\n-D OUTPUT -j ISTIO_A\n-X ISTIO_A\nCOMMIT\n"},
	{name: "delete a missing chain", input: "*nat\n-X ISTIO_Z\nCOMMIT\n", code: 1},
	{name: "append to a missing chain", input: "*nat\n-A ISTIO_Z -j RETURN\nCOMMIT\n", code: 1},
	{name: "no COMMIT", input: "*nat\n-A ISTIO_A -j ACCEPT\n", code: 1},
	{name: "declaration flushes", input: "*nat\n:ISTIO_A - [0:0]\n-A ISTIO_A -j ACCEPT\nCOMMIT\n"},
	{name: "declared twice", input: "*nat\n-N ISTIO_B\n:ISTIO_B - [0:0]\n:ISTIO_B - [0:0]\nCOMMIT\n"},
	{name: "DROP in nat", input: "*nat\n-A ISTIO_A -j DROP\nCOMMIT\n", code: 2},
	{name: "unknown table", input: "*foo\nCOMMIT\n", code: 2},
	{name: "policy on a user chain", input: "*nat\n:ISTIO_B ACCEPT [0:0]\nCOMMIT\n", codes: [2]int{0, 1}},
	{name: "insert beyond the end", input: "*nat\n-I ISTIO_A 3 -j RETURN\nCOMMIT\n", code: 1},
	{name: "insert at the end", input: "*nat\n-I ISTIO_A 2 -j ACCEPT\nCOMMIT\n"},
	{name: "rule outside a table", input: "-A OUTPUT -j ACCEPT\nCOMMIT\n", code: 1},
	{name: "table inside a table", input: "*nat\n:ISTIO_B - [0:0]\n*mangle\nCOMMIT\n", code: 2},
	{name: "unknown option", input: "*nat\n-A ISTIO_A --bogus -j RETURN\nCOMMIT\n", code: 2},
	{name: "host bits cleared", input: "*nat\n-A ISTIO_A -d 10.1.2.3/16 -j RETURN\n-A ISTIO_A -s 10.9.9.9 -j RETURN\nCOMMIT\n"},
	{name: "owner match reached from PREROUTING", input: "*mangle\n:ISTIO_Y - [0:0]\n-A ISTIO_Y -m owner --uid-owner 1 -j RETURN\n-A PREROUTING -j ISTIO_Y\nCOMMIT\n", codes: [2]int{4, 1}},
	{name: "TPROXY in OUTPUT", input: "*mangle\n-A OUTPUT -p tcp -j TPROXY --on-port 1\nCOMMIT\n", codes: [2]int{4, 1}},
	{name: "-i in OUTPUT", input: "*nat\n-A OUTPUT -i lo -j RETURN\nCOMMIT\n", code: 2},
	{name: "REDIRECT needs a protocol", input: "*nat\n-A ISTIO_A -j REDIRECT --to-ports 15001\nCOMMIT\n", code: 2},
	{name: "canonical forms", input: `*mangle
:ISTIO_X - [0:0]
:ISTIO_Y - [0:0]
-A ISTIO_Y -p tcp -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A ISTIO_X -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A ISTIO_Y -p tcp -m connmark --mark 0x539/0xffff -j CONNMARK --restore-mark
-A OUTPUT -j ISTIO_Y
-A ISTIO_X -p tcp -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
-A ISTIO_X -p tcp -i lo -m mark ! --mark 1338 -j RETURN
-A ISTIO_X ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A ISTIO_X -p udp --sport 53 -m multiport ! --dports 53,15008 -j RETURN
-A PREROUTING -p tcp -j ISTIO_X
COMMIT
*raw
:ISTIO_R - [0:0]
-A ISTIO_R -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1
-A OUTPUT -j ISTIO_R
COMMIT
*nat
-A ISTIO_A -p udp -d 127.0.0.53/32 --dport 53 -j REDIRECT --to-port 15053
-I ISTIO_A 1 -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN
COMMIT
`},
}
