package fleet

import "time"

// Result is one fleet size's measurement.
type Result struct {
	N          int
	Pods       int           // pods of the fleet's nodes (API objects)
	CreatePods time.Duration // creating them
	StartFleet time.Duration // from the first controller's start to every one ready
	Stagger    time.Duration
	// OtherPodWatches are the pod watches open before the fleet started (the API server's own).
	OtherPodWatches float64
	// APIRSSWithoutFleet is the API server's resident set once this size's pods exist, before its
	// new controllers start.
	APIRSSWithoutFleet float64
	Steady             Figures
	Churn              Figures
	ChurnRate          float64 // pods replaced per second (one delete and one create each)
	ChurnResult        ChurnResult
	Restart            RestartResult
	Cores              int     // of the machine
	LoadBefore         float64 // one-minute load average before the cluster started
}

// Run is a whole benchmark run: every N, and how it was made.
type Run struct {
	Date    time.Time
	Command string
	Version string // of the controller binary, when known
	Results []Result
}
