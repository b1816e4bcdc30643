//go:build !race

package controller

// raceEnabled: the race detector is on (its shadow memory inflates RSS several times).
const raceEnabled = false
