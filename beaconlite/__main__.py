from beaconlite.cli import main

main()
