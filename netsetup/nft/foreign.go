package nft

// ForeignError is Apply's refusal of a namespace that holds iptables rules, which would run
// alongside ours; Reason names them. Nothing was written.
type ForeignError struct{ Reason string }

func (e *ForeignError) Error() string { return e.Reason }
