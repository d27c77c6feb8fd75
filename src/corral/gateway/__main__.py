from corral.gateway.main import main

main()
