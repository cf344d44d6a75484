from tests.kato_double.app import main

main()
