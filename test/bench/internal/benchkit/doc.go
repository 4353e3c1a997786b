// Package benchkit holds what the benchmark programs under test/bench have
// in common: the main() skeleton and the test cluster they start from, the
// API credentials they hand the agents, running a command in a node's
// network namespace, a bounded worker pool, and reading a process' CPU time
// and peak memory. Only logic that is the same in every program lives here;
// what a benchmark measures stays in its own package.
package benchkit
