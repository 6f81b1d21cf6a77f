// Package tools pins the build tools keygate's CI uses (xcaddy), kept out of
// the plugin's own go.mod so they never enter a user's module graph.
package tools
