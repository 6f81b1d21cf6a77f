// Package keygate is a Caddy HTTP handler that puts per-integration API keys
// in front of an email provider.
package keygate
