// Package browser drives the keygate web console in headless Chromium
// through a real caddy binary. It is a module of its own so that chromedp
// never enters the plugin's module graph; the root package's
// TestConsoleInABrowser runs it with the binary it built.
package browser
