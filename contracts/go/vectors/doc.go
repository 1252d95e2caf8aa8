// Package vectors holds the Go side of the golden-vector tests: every vector in
// proto/testdata decodes, matches its canonical JSON, re-encodes byte-identically and keeps
// its unknown fields. See docs/contracts.md.
package vectors
