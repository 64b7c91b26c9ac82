// Package webui tests the web UI of the jobs function in a real browser: Debian's headless
// Chromium (installed by `make tools`), driven over the DevTools protocol by chromedp, on the
// stack `make run` starts (the localstack binary with a real redis-server, the OCM hub, two
// managed clusters with their work agents, the broker and the four functions). Screenshots of
// each step go to $TEST_ARTIFACTS/webui, else tests/webui/artifacts (ignored by git).
package webui
