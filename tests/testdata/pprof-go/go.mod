module outpost.test/pprofgo

go 1.19
