package store

// PreludeLua is the part every job script starts with, for BenchmarkScriptCost.
const PreludeLua = prelude
