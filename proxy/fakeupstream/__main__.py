"""`python -m proxy.fakeupstream --port 9000`: the fake OpenAI API on its own."""

from proxy.fakeupstream.app import main

main()
