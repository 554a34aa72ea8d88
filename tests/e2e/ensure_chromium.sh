#!/bin/sh
# Best effort: the console's browser tests need Debian's chromium and chromium-driver. Installed
# here when missing and this runs as root with apt; otherwise those tests skip, saying why.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing chromium and chromium-driver for the browser tests"
	apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
		|| echo "could not install chromium; the browser tests will skip"
else
	echo "chromium or chromedriver missing (apt-get install chromium chromium-driver); the browser tests will skip"
fi
exit 0
